"""A fleet on one machine: site stacks bridged to a central broker, and the check that runs
it (``python -m tools.fleet``, make fleet; docs/fleet.md)."""

"""Each device protocol in one place, both directions: what goes to the device and what comes back."""

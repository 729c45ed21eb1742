"""What people run by hand: the operator's ``qubit`` CLI, the demo, and the local broker and launcher they use."""

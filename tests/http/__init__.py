"""The real app (create_app, the connection layer) in the test's loop, in front of a
small recording upstream."""

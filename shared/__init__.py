"""The project's common runtime: one way to configure, serve, persist, fail, trace and call peers."""

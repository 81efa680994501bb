"""pytest plugin: the `warren_broker` fixture (a real node per test session)."""

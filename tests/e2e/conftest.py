"""End-to-end tests use the worker/relay/stack_env fixtures of tests/conftest.py."""

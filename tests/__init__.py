"""The test suite; shared helpers in tests/helpers.py, fixtures in tests/conftest.py."""

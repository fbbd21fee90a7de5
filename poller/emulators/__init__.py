"""Local HTTP(S) stand-ins of the services rca-poller talks to, for the tests and `rca-poller demo`.

Each emulator is its own module (`log_analytics`, ...); nothing is imported here so that loading one
does not pull in the others' dependencies.
"""

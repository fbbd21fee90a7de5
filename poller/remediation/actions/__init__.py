"""One module per platform; each action plans from extracted fields, then calls the vendor SDK.

The contract every action keeps (see `base.Action`): `plan` is pure; `prepare` only reads; `perform` makes the
one mutating call; `reconcile` tells, after a crash, whether that call already landed; `verify` follows it.
"""

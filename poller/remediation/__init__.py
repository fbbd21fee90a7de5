"""Auto-remediation (issue 7): policies as data, one action module per platform, an engine with guards and audit.

Only policy matches on extracted Failure fields trigger an action; model output (RCA) is never read here.
"""

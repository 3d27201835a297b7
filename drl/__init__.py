"""drl from Python: `from drl.client import Client` (drl/client.py); its exceptions in
drl/errors.py. Empty on purpose: `import drl.errors` loads nothing else.
"""

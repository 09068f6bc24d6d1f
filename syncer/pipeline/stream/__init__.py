"""The package the stream handler Lambda ships (deploy/backsync_stack/lambda_asset.py): the
handler (handler.py) and the change contract it shares with the worker (contract.py). It
imports nothing from Django or the rest of syncer; Django code imports only the contract
from it (import contracts in pyproject.toml, checked by tests/test_architecture.py)."""

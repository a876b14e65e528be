"""keyhouse: self-hosted API keys in the shapes of three public APIs, contract first."""

import warnings

# Connexion imports Starlette's TestClient at import time, which warns about httpx on every start;
# keyhouse does not use it to serve.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

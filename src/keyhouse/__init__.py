"""keyhouse: self-hosted API keys in the shapes of three public APIs, contract first."""

"""Generation: grounded, cited answers from a local model or an OpenAI-compatible server."""

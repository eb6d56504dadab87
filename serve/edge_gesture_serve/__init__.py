"""edge-gesture serve: the VLM runtime behind KServe's model server."""

"""OpenAI's file search, self-hosted: uploaded files, vector stores over knowledge bases, and attribute filters."""

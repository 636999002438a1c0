"""Reading domain sources, the project tokenizer, and the token store."""

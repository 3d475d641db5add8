"""Hub cards (dataset and model cards) generated from a run's config and manifests.

Cards are built with huggingface_hub's card classes so the Hub renders their metadata; they never
contain secrets (tokens are read from the environment at push time only).
"""

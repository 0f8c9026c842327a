"""The tuning pipeline (tune/dvc.yaml): each arm's learning rate searched on validation, then scored."""

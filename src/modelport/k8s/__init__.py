"""Kubernetes: manifests, a Helm chart and a KServe InferenceService for a model image, from the model's metadata."""

"""Gradio UI for the Space: UI code only; every action calls the pipeline in ``trainer``."""

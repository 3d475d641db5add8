"""Gradio UI for the Space: UI code only; every action calls the pipeline in ``trainer``."""


def gradio_auto_wrap(fn):
    """On a Space (SYSTEM=spaces) gradio imports ``spaces`` (Hugging Face's ZeroGPU package) and wraps every
    event function with ``spaces.gradio_auto_wrap``; this package shadows that name, and this app does not
    use ZeroGPU, so functions stay as they are. (Without this, the app fails at start-up on a Space.)"""
    return fn

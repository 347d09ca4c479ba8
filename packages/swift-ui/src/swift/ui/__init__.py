"""swift.ui: `swift web-ui` and `swift app` on Gradio (imported only when a UI starts)."""

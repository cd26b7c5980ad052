"""img2pdf service: turn an image at a URL into a PDF stored in a bucket."""

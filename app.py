"""mobilesam-web Gradio app (Hugging Face Space entry point): `python app.py [options]`.

The same as `mobilesam-web serve`; options and their environment variables: `python app.py -h`
and mobilesam_web/cli.py.
"""

import sys

from mobilesam_web.cli import serve

if __name__ == "__main__":
    sys.exit(serve())

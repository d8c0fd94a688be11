"""The web app (:mod:`locscope.serve.app`): the pipelines behind a browser page."""

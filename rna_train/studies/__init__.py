"""Studies built on the core: real assets (``assets``), the keyword-fragility study on a real LLM
(``textstudy``, ``textstudy_summary``, ``textstudy_theory``: theory setting 5), the quickstart on
SmolLM2 (``quickstart_text``), the earlier multiple-choice SmolLM2 runner (``smollm2``) and the
miniature world (``miniature``: theory setting 4). The core (config, models, data, losses, methods,
step, trainer, checkpoint) and the evaluation package never import from here.
"""

"""``ottotrain stack``: a stacked ensemble of level-1 members, level-2 learners and a top.

``run.run_stack(cfg, StackOptions(...), log=...)`` trains one; ``level1`` trains the members
(``cv_members``, ``learner_fold``), ``level2`` the learners on their OOF predictions, ``top``
combines them; ``budget`` keeps the time limit, ``resume`` says what may change on resume.
Nothing is imported here, so that a module of the stack loads alone.
"""

"""Pictures that explain a run: the plan before it (:mod:`.preview`) and its timeline after it
(:mod:`.timeline`)."""

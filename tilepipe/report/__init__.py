"""Everything that explains a run, kept apart from the core flow (sources -> grid -> blocks ->
engine -> stitch -> sink): the run summary (:mod:`.summary` assembles it from :mod:`.figures`,
:mod:`.advice`, :mod:`.tactics`, :mod:`.cost` and :mod:`.origins`; :mod:`.markdown` renders it),
the reference catalog those cite (:mod:`.catalog`), the progress line (:mod:`.progress`),
``tilepipe doctor`` (:mod:`.doctor`), and the pictures of the plan before a run (:mod:`.preview`)
and of its timeline after it (:mod:`.timeline`)."""

"""Everything that explains a run, kept apart from the core flow (sources -> grid -> blocks ->
engine -> stitch -> sink): the run summary (:mod:`.summary`) and the throughput tactics it claims
(:mod:`.tactics`), the reference catalog those cite (:mod:`.catalog`), the progress line
(:mod:`.progress`), ``tilepipe doctor`` (:mod:`.doctor`), and the pictures of the plan before a run
(:mod:`.preview`) and of its timeline after it (:mod:`.timeline`)."""

"""Weight conversion: the paper authors' released detectors (:mod:`mgdet.convert.authors`)."""

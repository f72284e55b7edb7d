"""Weight conversion tools: torchvision's ImageNet backbones (:mod:`~mgdet.convert.torchvision`)
and the paper authors' released detectors (:mod:`~mgdet.convert.authors`)."""

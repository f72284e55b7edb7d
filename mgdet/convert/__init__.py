"""Weight conversion tools: torchvision's ImageNet backbones (:mod:`~mgdet.convert.torchvision`)."""

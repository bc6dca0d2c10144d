"""The bundle machinery: variants and their sources, rendering, metadata, configs as ``monai.bundle`` reads them,
packaging for sharing."""

from custom_nets.bundles.config import bundle_parser, profile_configs
from custom_nets.bundles.pretrained import PRETRAINED_CONFIG, PRETRAINED_RECORDS, pretrained_records
from custom_nets.bundles.render import layered_configs, openkbp_cpu_config, render_all, render_bundle
from custom_nets.bundles.variants import BundleVariant, load_variants

__all__ = ["BundleVariant", "load_variants", "render_bundle", "render_all", "layered_configs", "openkbp_cpu_config",
           "bundle_parser", "profile_configs", "PRETRAINED_CONFIG", "PRETRAINED_RECORDS", "pretrained_records"]

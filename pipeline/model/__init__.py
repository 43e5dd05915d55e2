"""The networks: part geometry, deformable warping, generator and discriminator."""
from pipeline.model.blocks import count_parameters
from pipeline.model.discriminator import Discriminator
from pipeline.model.generator import Generator, GeneratorOutput
from pipeline.model.geometry import PartGeometry, part_geometry
from pipeline.model.warp import affine_to_grid_theta, warp_parts

__all__ = [
    "Discriminator", "Generator", "GeneratorOutput", "PartGeometry", "affine_to_grid_theta",
    "count_parameters", "part_geometry", "warp_parts",
]

"""Every built-in sampler and search space against the shared contracts (sampler_contract.py,
space_contract.py)."""
from pada_fast.sampling import (FairPathSampler, ImportanceDataSampler, ImportancePathSampler,
                                UniformDataSampler, UniformPathSampler)
from pada_fast.spaces import build_supernet

from sampler_contract import MASK, DataSamplerContract, PathSamplerContract
from space_contract import SpaceContract


class TestUniformPathSampler(PathSamplerContract):
    make = staticmethod(UniformPathSampler)


class TestFairPathSampler(PathSamplerContract):
    make = staticmethod(FairPathSampler)


class TestImportancePathSamplerShared(PathSamplerContract):
    make = staticmethod(lambda mask: ImportancePathSampler(mask, granularity="shared"))


class TestImportancePathSamplerPerEdge(PathSamplerContract):
    make = staticmethod(lambda mask: ImportancePathSampler(mask, granularity="per_edge"))


class TestImportancePathSamplerOfficial(PathSamplerContract):
    make = staticmethod(lambda mask: ImportancePathSampler(mask, aggregation="official", offset="lagged"))


class TestUniformDataSampler(DataSamplerContract):
    make = staticmethod(UniformDataSampler)


class TestImportanceDataSampler(DataSamplerContract):
    make = staticmethod(ImportanceDataSampler)


class TestImportanceDataSamplerOfficial(DataSamplerContract):
    make = staticmethod(lambda n: ImportanceDataSampler(n, aggregation="official"))


class TestNB201Space(SpaceContract):
    make = staticmethod(lambda: build_supernet("nb201", C=4, N=1, num_classes=10, in_channels=3))


class TestNB201AffineReductions(SpaceContract):
    make = staticmethod(lambda: build_supernet("nb201", C=4, N=1, reduction_bn="affine"))


class TestProxylessSpace(SpaceContract):
    input_shape = (2, 3, 32, 32)
    make = staticmethod(lambda: build_supernet("proxyless", num_classes=10, width_mult=0.25,
                                               stem_stride=1, resolution=32, bn_mode="batch"))


class TestDartsSpace(SpaceContract):
    make = staticmethod(lambda: build_supernet("darts", C=4, num_cells=3, num_classes=10))


def test_every_registered_builtin_has_a_contract_test():
    from pada_fast.registry import DATA_SAMPLERS, PATH_SAMPLERS, registered
    tested = {c.make(MASK).kind for c in (TestUniformPathSampler, TestFairPathSampler,
                                          TestImportancePathSamplerShared)}
    assert set(registered("path_samplers")) == tested == set(PATH_SAMPLERS.names())
    assert set(registered("data_samplers")) == {"uniform", "importance"} == set(DATA_SAMPLERS.names())
    spaces = {c.make().space_name for c in (TestNB201Space, TestProxylessSpace, TestDartsSpace)}
    assert spaces == set(registered("spaces"))


"""`toren cleanup` prunes only images Toren built: an image a user built FROM a Toren image inherits Toren's
labels, and must survive."""

from __future__ import annotations

import io
import random

import pytest

from tests.conftest import BASE_IMAGE
from tests.integration.test_run_local import toren
from toren_action.agents.shell import ShellProfile
from toren_action.sandbox import image

pytestmark = pytest.mark.docker


def build_torens(docker_client, engine, home, made: list[str]) -> tuple[str, str]:
    """A real Toren agent image (ensure_image), unique to this test by its uid; returns (tag, id)."""
    uid = random.randint(20_000, 59_999)  # noqa: S311 - a name, not a secret
    recipe = image.ImageRecipe(base_id=docker_client.images.get(BASE_IMAGE).id, profile=ShellProfile(), uid=uid,
                               gid=uid, ca_bundle=None)
    made.append(recipe.tag)  # removed by the test whatever happens
    tag, built = image.ensure_image(engine, recipe, lambda _line: None, home)
    assert built
    return tag, docker_client.images.get(tag).id


def remove_quietly(docker_client, ref: str, force: bool = True) -> None:
    import docker.errors

    try:
        docker_client.api.remove_image(ref, force=force)
    except docker.errors.APIError:
        pass


def test_cleanup_keeps_images_built_from_torens_and_prunes_torens_own(workdir, toren_home, capsys, docker_client,
                                                                     engine):
    made: list[str] = []
    derived: list[str] = []
    old = None
    try:
        parent_tag, parent = build_torens(docker_client, engine, toren_home, made)
        old_tag, old = build_torens(docker_client, engine, toren_home, made)
        # a user's images FROM the Toren image, untagged (dangling): they inherit Toren's labels
        for n in range(2):
            img, _ = docker_client.images.build(fileobj=io.BytesIO(
                f"FROM {parent_tag}\nRUN echo user-{n}-$RANDOM > /home/toren/mine\n".encode()), rm=True, nocache=True)
            derived.append(img.id)
            assert img.labels[image.LABEL_MANAGED] == "1"  # inherited: the label alone cannot tell them apart
        # Toren's superseded image: its tag now points elsewhere, so it is dangling
        repo, tag = old_tag.rsplit(":", 1)
        docker_client.api.tag(BASE_IMAGE, repo, tag)
        assert old in image.built_ids(toren_home) and parent in image.built_ids(toren_home)

        code, out, _ = toren(capsys, "cleanup", "--all", "--dry-run")
        assert code == 0 and f"would remove image {old[7:17]}" in out
        assert not any(d[7:17] in out for d in derived)
        code, out, _ = toren(capsys, "cleanup", "--all")
        assert code == 0 and f"removed image {old[7:17]}" in out
        ids = {i.id for i in docker_client.images.list(all=True)}
        assert old not in ids  # Toren's own dangling image is gone...
        assert all(d in ids for d in derived) and parent in ids  # ...the user's survive, and the tagged parent
        assert old not in image.built_ids(toren_home) and parent in image.built_ids(toren_home)
    finally:
        for d in derived:
            remove_quietly(docker_client, d)
        for i, tag in enumerate(made):  # the second tag was moved to the base image: untag it, never force
            remove_quietly(docker_client, tag, force=i == 0)
        if old:
            remove_quietly(docker_client, old)


def test_an_image_found_under_its_tag_is_recorded_only_when_its_hash_label_matches(toren_home, docker_client,
                                                                                   engine):
    uid = random.randint(20_000, 59_999)  # noqa: S311
    recipe = image.ImageRecipe(base_id=docker_client.images.get(BASE_IMAGE).id, profile=ShellProfile(), uid=uid,
                               gid=uid, ca_bundle=None)
    repo, tag = recipe.tag.rsplit(":", 1)
    docker_client.api.tag(BASE_IMAGE, repo, tag)  # someone else's image under Toren's tag: no hash label
    try:
        assert image.ensure_image(engine, recipe, lambda _line: None, toren_home) == (recipe.tag, False)
        assert docker_client.images.get(BASE_IMAGE).id not in image.built_ids(toren_home)
    finally:
        docker_client.api.remove_image(recipe.tag)

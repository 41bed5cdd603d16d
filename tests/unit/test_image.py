from toren_action.agents.shell import ShellProfile
from toren_action.sandbox.image import CA_PATH, ImageRecipe


def recipe(**kw):
    base = dict(base_id="sha256:" + "1" * 64, profile=ShellProfile(), uid=1000, gid=1000, ca_bundle=None)
    return ImageRecipe(**{**base, **kw})


def test_dockerfile_shape():
    text = recipe().dockerfile()
    lines = text.splitlines()
    assert lines[1] == "FROM sha256:" + "1" * 64
    assert lines[-1] == "USER 1000:1000"  # the agent never runs as root
    assert "WORKDIR /workspace" in lines
    assert CA_PATH not in text


def test_ca_bundle_is_copied_and_trusted():
    text = recipe(ca_bundle=b"-----BEGIN CERTIFICATE-----\n").dockerfile()
    assert f"COPY ca-bundle.crt {CA_PATH}" in text
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "PIP_CERT", "GIT_SSL_CAINFO"):
        assert f"{var}={CA_PATH}" in text
    # the CA goes in before anything that may fetch packages
    assert text.index("COPY ca-bundle.crt") < text.index("apt-get")


def test_hash_is_stable_and_tracks_every_input():
    a = recipe()
    assert a.content_hash() == recipe().content_hash()
    assert a.tag == recipe().tag and a.tag.startswith("toren/agent:shell-")
    others = [
        recipe(base_id="sha256:" + "2" * 64),
        recipe(uid=1234),
        recipe(gid=55),
        recipe(ca_bundle=b"x"),
        recipe(ca_bundle=b"y"),
    ]
    hashes = {a.content_hash(), *(r.content_hash() for r in others)}
    assert len(hashes) == 1 + len(others)


def test_context_tar_holds_dockerfile_and_ca():
    import io
    import tarfile

    data = recipe(ca_bundle=b"PEM").context_tar()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert sorted(tar.getnames()) == ["Dockerfile", "ca-bundle.crt"]
        assert tar.extractfile("ca-bundle.crt").read() == b"PEM"


def test_the_cli_gets_its_own_layer_after_node_and_its_version_is_in_the_hash(tmp_path):
    from toren_action.agents.claude import ClaudeProfile

    node = tmp_path / "node"
    (node / "bin").mkdir(parents=True)
    (node / "bin" / "node").write_bytes(b"\x7fELF")
    a = recipe(profile=ClaudeProfile(), node_dir=node, node_label="24.19.0-x86_64")
    text = a.dockerfile()
    # system layers, then Node, then the CLI: a new CLI version reuses every layer above its own
    assert text.index("safe.directory") < text.index("COPY node /opt/toren/node") < text.index("npm install")
    assert "@anthropic-ai/claude-code@" + ClaudeProfile.version in text
    b = recipe(profile=ClaudeProfile("2.0.0"), node_dir=node, node_label="24.19.0-x86_64")
    assert a.content_hash() != b.content_hash() and a.tag != b.tag
    cut = text.index("# agent CLI")
    assert text[:cut] == b.dockerfile()[:cut]  # identical up to the CLI layer: Docker reuses those layers
    import io
    import tarfile

    names = tarfile.open(fileobj=io.BytesIO(a.context_tar())).getnames()
    assert "node/bin/node" in names and "Dockerfile" in names


def test_the_record_of_built_images(tmp_path):
    import os
    import stat
    from types import SimpleNamespace

    from toren_action.sandbox import image

    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert image.built_ids(tmp_path) == set()
    image.record_built(a, tmp_path)
    image.record_built(a, tmp_path)  # once
    image.record_built("sha256:../../etc", tmp_path)  # not an image id: ignored
    image.record_built(b, tmp_path)
    record = tmp_path / image.BUILT_RECORD
    assert record.read_text() == f"{a}\n{b}\n" and stat.S_IMODE(os.stat(record).st_mode) == 0o600
    image.forget_built({a}, tmp_path)
    assert image.built_ids(tmp_path) == {b}

    def img(i, labels):
        return SimpleNamespace(id=i, labels=labels)

    ours = image.built_ids(tmp_path)
    assert image.is_torens(img(b, {"toren.managed": "1"}), ours)
    assert not image.is_torens(img(a, {"toren.managed": "1"}), ours)  # labelled (inherited), not built by Toren
    assert not image.is_torens(img(b, {}), ours)


def test_the_record_is_not_written_through_a_link(tmp_path):
    import pytest

    from toren_action.sandbox import image

    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    (tmp_path / image.BUILT_RECORD).symlink_to(target)
    with pytest.raises(OSError):
        image.record_built("sha256:" + "c" * 64, tmp_path)
    assert target.read_text() == "keep\n"

"""`toren scan --image` and `toren health --security` look at an image's layers from the host and never run it: an
image cannot lie about its files (a /bin/sh that exits or sleeps), whiteouts count, symlinks resolve inside the
image, and no container is left behind. Images are built here FROM the local base image (no registry)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from tests.conftest import BASE_IMAGE
from tests.integration.test_scan import env_with_toren

pytestmark = pytest.mark.docker

# Each image's /bin/sh is replaced last (exec form: nothing runs a shell after that).
LIAR = f"""FROM {BASE_IMAGE}
RUN mkdir -p /root/.aws /home/dev/.ssh && echo '[default]' > /root/.aws/credentials \\
 && echo key > /home/dev/.ssh/id_ed25519 \\
 && cp /bin/true /usr/local/bin/sneaky && chmod 4755 /usr/local/bin/sneaky \\
 && cp /bin/true /opt/groupy && chmod 2755 /opt/groupy \
 && mkdir -p /srv/dev2 && echo x > /srv/dev2/.netrc && ln -s /srv/dev2 /home/dev2
RUN ["/bin/ln", "-sf", "/bin/true", "/bin/sh"]
ENTRYPOINT ["/bin/true"]
"""
SLEEPER = f"""FROM {BASE_IMAGE}
RUN mkdir -p /root/.aws && echo '[default]' > /root/.aws/credentials \\
 && printf '#!/bin/bash\\nexec sleep infinity\\n' > /tmp/sh && chmod 755 /tmp/sh
RUN ["/bin/mv", "-f", "/tmp/sh", "/bin/sh"]
ENTRYPOINT ["/bin/sh"]
"""
LAYERS = f"""FROM {BASE_IMAGE}
RUN mkdir -p /root/.aws /root/.docker /home/gone /home/u2 /home/back \\
 && echo x > /root/.aws/credentials && echo '{{}}' > /root/.docker/config.json && echo x > /root/.pypirc \\
 && echo x > /home/gone/.netrc && echo x > /home/u2/.npmrc && echo x > /home/back/.git-credentials \\
 && cp /bin/true /usr/local/bin/was-suid && chmod 4755 /usr/local/bin/was-suid \\
 && cp /bin/true /usr/local/bin/late-suid
RUN rm /root/.aws/credentials /root/.pypirc /home/back/.git-credentials && chmod 600 /root/.docker/config.json \\
 && rm -rf /home/gone && mkdir /home/gone && touch /home/gone/other && rm -rf /home/u2 \\
 && chmod u-s /usr/local/bin/was-suid && chmod 4755 /usr/local/bin/late-suid
RUN echo again > /root/.pypirc && mkdir -p /home/back && echo again > /home/back/.git-credentials
"""
PATHS = f"""FROM {BASE_IMAGE}
RUN mkdir -p /opt/ww /srv/target /opt/ok && chmod 777 /opt/ww && chmod 1777 /srv/target \\
 && ln -s ../srv/target /opt/rel && ln -s /usr/local/bin /opt/abs && chmod 777 /usr/local/bin \\
 && ln -s /opt/ok /opt/fine && mkdir -p /pub/bin && chmod 777 /pub
ENV PATH=/opt/ww:/opt/rel:/opt/abs:/opt/fine:/pub/bin:/tmp/missing:/usr/bin:/bin
"""


@pytest.fixture(scope="module")
def images(docker_client, tmp_path_factory):
    """name -> tag of each test image, removed afterwards."""
    tags = {}
    try:
        for name, dockerfile in {"liar": LIAR, "sleeper": SLEEPER, "layers": LAYERS, "paths": PATHS}.items():
            context = tmp_path_factory.mktemp(name)
            (context / "Dockerfile").write_text(dockerfile)
            tag = f"toren-test-imagescan-{name}:{uuid.uuid4().hex[:10]}"
            docker_client.images.build(path=str(context), tag=tag, rm=True, forcerm=True, network_mode="none")
            tags[name] = tag
        yield tags
    finally:
        for tag in tags.values():
            docker_client.images.remove(tag, force=True)


def scan(ref: str, timeout: float = 120) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "toren_action", "scan", "--image", ref, "--json"],
                          capture_output=True, text=True, env=env_with_toren(), timeout=timeout)
    return proc.returncode, {r["check"]: r for r in json.loads(proc.stdout)}


def no_container_from(docker_client, ref: str) -> bool:
    return docker_client.containers.list(all=True, filters={"ancestor": ref}) == []


def test_an_image_whose_shell_exits_still_shows_its_credentials_and_setuid_files(docker_client, images, toren_home):
    code, rows = scan(images["liar"])
    assert code == 1
    assert rows["credential files"]["ok"] is False
    # a home that is a symlink is followed inside the image
    assert rows["credential files"]["detail"] == "/root/.aws/credentials, /home/dev/.ssh/id_ed25519, /home/dev2/.netrc"
    detail = rows["setuid/setgid"]["detail"]
    assert "/usr/local/bin/sneaky" in detail and "/opt/groupy" in detail
    assert "/usr/bin/passwd" in detail or "binaries" in detail  # the base image's own ones are listed too
    assert "files" not in rows  # read to the end
    assert no_container_from(docker_client, images["liar"])


def test_an_image_whose_shell_sleeps_does_not_hang_the_scan(docker_client, images, toren_home):
    code, rows = scan(images["sleeper"], timeout=90)  # a scan that ran the image would never return
    assert code == 1 and rows["credential files"]["detail"] == "/root/.aws/credentials"
    assert no_container_from(docker_client, images["sleeper"])


def test_whiteouts_from_later_layers_count(docker_client, images, toren_home):
    code, rows = scan(images["layers"])
    found = rows["credential files"]["detail"].split(", ")
    # chmodded later: still there; deleted then added again: there
    assert sorted(found) == ["/home/back/.git-credentials", "/root/.docker/config.json", "/root/.pypirc"]
    # deleted by a whiteout, by an opaque directory, with its whole directory: not in the filesystem ...
    for gone in ("/root/.aws/credentials", "/home/gone/.netrc", "/home/u2/.npmrc"):
        assert gone not in found
        # ... yet still in an earlier layer of the image, which anyone with it can read
        assert gone in rows["deleted credential files"]["detail"]
    assert rows["deleted credential files"]["ok"] is False
    suid = rows["setuid/setgid"]["detail"]
    assert "/usr/local/bin/late-suid" in suid and "/usr/local/bin/was-suid" not in suid
    assert code == 1 and no_container_from(docker_client, images["layers"])


def test_world_writable_directories_on_path_are_found_through_the_images_own_symlinks(docker_client, images,
                                                                                     toren_home):
    code, rows = scan(images["paths"])
    assert code == 1 and rows["PATH"]["ok"] is False
    said = rows["PATH"]["detail"]
    assert "/opt/ww is world-writable" in said
    assert "/opt/rel (-> /srv/target) is world-writable" in said  # a relative link, sticky bit or not
    assert "/opt/abs (-> /usr/local/bin) is world-writable" in said  # 0755 on the host: judged in the image
    assert "/pub/bin: its parent /pub is world-writable" in said
    assert "/tmp/missing does not exist" in said
    assert "/opt/fine" not in said and "/usr/bin" not in said
    assert no_container_from(docker_client, images["paths"])


def test_health_security_reads_the_same_layers(docker_client, images, toren_home):
    proc = subprocess.run([sys.executable, "-m", "toren_action", "health", "--json", "--security", "--docker-image",
                           images["liar"]], capture_output=True, text=True, env=env_with_toren(), timeout=120)
    checks = {c["check"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["security credential files"]["ok"] is False
    assert "/root/.aws/credentials" in checks["security credential files"]["detail"]
    assert "/usr/local/bin/sneaky" in checks["security setuid/setgid"]["detail"]
    assert no_container_from(docker_client, images["liar"])


def test_a_scan_past_its_bounds_says_it_is_incomplete(docker_client, images, toren_home, monkeypatch):
    from toren_action.guard import imagescan

    monkeypatch.setattr(imagescan, "MAX_ENTRIES", 50)
    rows = {c: (ok, d) for c, ok, d in imagescan.scan_image(images["liar"])}
    assert rows["files"][0] is False and "50 entries (the cap)" in rows["files"][1]
    assert rows["credential files"][0] is False and "setuid/setgid" not in rows
    monkeypatch.setattr(imagescan, "MAX_ENTRIES", 10**6)
    monkeypatch.setattr(imagescan, "MAX_BYTES", 2**20)
    rows = {c: (ok, d) for c, ok, d in imagescan.scan_image(images["liar"])}
    assert rows["files"][0] is False and "the cap" in rows["files"][1]

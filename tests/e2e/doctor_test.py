"""`deeplens doctor` (issue #23): on a healthy setup (PostgreSQL migrated, the Kafka-protocol dev broker
with the pipeline's topics, a CNN model file, a writable data dir) every line is OK and the exit status
is 0; with PostgreSQL stopped, the model file missing and the data dir read-only it names each of the
three, says what to do, and exits 1. Needs ../shared/models (DEEPLENS_TEST_MODELS)."""
import os
import re
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import deeplens_e2e as e2e  # noqa: E402

MODELS = os.environ.get("DEEPLENS_TEST_MODELS",
                        os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "models"))
MOBILENET = os.path.join(MODELS, "mobilenet_v2_1.0_224_quint8.pb")
TOPICS = ["deeplens.images.uploaded", "deeplens.images.uploaded.high", "deeplens.images.uploaded.low",
          "deeplens.features.extraction", "deeplens.features.extraction.high", "deeplens.features.extraction.low",
          "deeplens.vectors.indexing", "deeplens.processing.completed", "deeplens.processing.failed"]


class DoctorTest(unittest.TestCase):
    def setUp(self):
        if not os.path.exists(MOBILENET):
            self.fail(f"the models directory is missing: {MOBILENET} (set DEEPLENS_TEST_MODELS, "
                      "or leave model tests out with -LE models)")
        self.dir = tempfile.mkdtemp(prefix="deeplens-doctor-e2e-")
        self.pg = e2e.PostgresServer()
        self.broker = subprocess.Popen([e2e.DEELENS_BIN, "dev-kafka"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL)
        m = re.search(r"bootstrap.servers=(\S+)", self.broker.stdout.readline().decode())
        self.bootstrap = m.group(1)
        self.data = os.path.join(self.dir, "data")
        os.makedirs(self.data)
        self.model = os.path.join(self.dir, "mobilenet.pb")
        os.symlink(os.path.abspath(MOBILENET), self.model)  # a file the test can take away
        self.config = os.path.join(self.dir, "deeplens.toml")
        with open(self.config, "w") as f:
            f.write(f'''data_dir = "{self.data}"
[metadata]
url = "{self.pg.url}"
[bus]
url = "kafka://{self.bootstrap}"
[[models]]
name = "mobilenet_v2"
file = "mobilenet.pb"
output_layer = "embedding"
dimension = 1280
mean = 127.5
scale = 0.00784313725490196
''')
        self.mounted = False

    def tearDown(self):
        if self.mounted:
            subprocess.run(["umount", self.data])
        os.chmod(self.data, 0o755)
        self.broker.terminate()
        self.broker.wait()
        self.broker.stdout.close()
        self.broker.stdin.close()
        if self.pg.proc.poll() is None:
            self.pg.stop()
        subprocess.run(["rm", "-rf", self.dir, self.pg.dir])

    def doctor(self):
        r = subprocess.run([e2e.DEELENS_BIN, "--config", self.config, "doctor"], capture_output=True, text=True,
                           timeout=120)
        print(r.stdout)
        return r

    def test_a_healthy_setup_is_all_ok_and_three_faults_are_each_named(self):
        # Healthy: the schema migrated, the topics created by an independent client (kcat's
        # metadata request auto-creates them on the dev broker, which has no CreateTopics API).
        subprocess.run([e2e.DEELENS_BIN, "--config", self.config, "migrate"], check=True, capture_output=True)
        for t in TOPICS:
            subprocess.run(["kcat", "-b", self.bootstrap, "-L", "-t", t], check=True, capture_output=True, timeout=30)
        r = self.doctor()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        lines = [line for line in r.stdout.splitlines() if re.match(r"^(OK|WARN|FAIL) ", line)]
        checks = {line.split()[1] for line in lines}
        for wanted in ("config", "data_dir", "disk", "files", "metadata", "bus", "blobs", "vectors", "model"):
            self.assertIn(wanted, checks, r.stdout)
        self.assertEqual([line for line in lines if not line.startswith("OK ")], [], "every line is OK")
        self.assertRegex(r.stdout, r"OK +model mobilenet_v2 +1280-d")
        self.assertRegex(r.stdout, r"OK +metadata +PostgreSQL reachable")
        self.assertRegex(r.stdout, r"OK +bus +Kafka reachable .* all 9 topics present")

        # Three faults at once: PostgreSQL stopped, the model file gone, the data dir read-only.
        self.pg.stop()
        os.unlink(self.model)
        if os.geteuid() == 0:  # root writes through mode bits: make the filesystem itself read-only
            subprocess.run(["mount", "--bind", self.data, self.data], check=True)
            self.mounted = True
            subprocess.run(["mount", "-o", "remount,ro,bind", self.data], check=True)
        else:
            os.chmod(self.data, 0o555)
        r = self.doctor()
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        out = r.stdout
        self.assertRegex(out, r"FAIL +metadata +PostgreSQL not reachable")
        self.assertIn("start PostgreSQL", out)
        self.assertRegex(out, r"FAIL +model mobilenet_v2 .*mobilenet\.pb")
        self.assertRegex(out, r"FAIL +data_dir +.*not writable")
        self.assertIn("chown -R deeplens", out)
        self.assertRegex(out, r"OK +bus +Kafka reachable", "what still works is still OK")
        self.assertIn("check(s) failed", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)

package boxlite

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The fixtures of the scenario tests (bindings/SCENARIOS.md): a fresh home per test, the
// busybox test root disk, the engine (qemu unless BOXLITE_TEST_ENGINE says otherwise, as
// the C tests), and counters of this process's open fds and helper processes.

var repo = func() string { d, _ := filepath.Abs("../.."); return d }()

func testEngine(t testing.TB) Engine {
	switch e := os.Getenv("BOXLITE_TEST_ENGINE"); e {
	case "", "qemu":
		return EngineQEMU
	case "krun":
		return EngineKrun
	case "auto":
		return EngineAuto
	default:
		if t == nil {
			panic("BOXLITE_TEST_ENGINE=" + e + ": not qemu, krun or auto")
		}
		t.Fatalf("BOXLITE_TEST_ENGINE=%q: not qemu, krun or auto", e)
		return 0
	}
}

func testRootfs(t testing.TB) string {
	p := os.Getenv("BOXLITE_TEST_ROOTFS")
	if p == "" {
		p = filepath.Join(repo, "target/guest/busybox-rootfs.ext4")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no test root disk at %s: run scripts/build-test-rootfs.sh (or set BOXLITE_TEST_ROOTFS)", p)
	}
	return p
}

// newHome is a fresh home; short, since it holds unix sockets (108-byte path limit).
func newHome(t testing.TB) string {
	d, err := os.MkdirTemp("", "bxgo-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func openRuntime(t testing.TB, home string) *Runtime {
	t.Helper()
	rt, err := NewRuntime(&RuntimeOptions{Home: home, Engine: testEngine(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

func newBoxT(t testing.TB, rt *Runtime, opts BoxOptions) *Box {
	t.Helper()
	opts.RootDisk, opts.RootDiskReadOnly = testRootfs(t), true
	b, err := rt.CreateBox(context.Background(), &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// ourShims are the pids of boxlite-shim processes that are children of this process.
func ourShims() []int {
	var pids []int
	me := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(stat)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < 0 {
			continue
		}
		fields := strings.Fields(s[close+2:])
		if len(fields) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		if s[open+1:close] == "boxlite-shim" && ppid == me {
			pids = append(pids, pid)
		}
	}
	return pids
}

func openFds() int {
	entries, _ := os.ReadDir("/proc/self/fd")
	return len(entries)
}

func settle(d time.Duration, pred func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if pred() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return pred()
}

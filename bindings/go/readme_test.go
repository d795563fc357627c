package boxlite

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The README's opening example, run verbatim (as tests/c/example.c is for docs/c-api.md).
func TestReadmeExampleRunsVerbatim(t *testing.T) {
	text, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	const open = "# boxlite for Go\n\n```go\n"
	if !bytes.HasPrefix(text, []byte(open)) {
		t.Fatal("the README must open with the example")
	}
	example, _, ok := strings.Cut(string(text[len(open):]), "```")
	if !ok {
		t.Fatal("the example's block is not closed")
	}
	if n := len(strings.Split(strings.TrimSpace(example), "\n")); n > 10 {
		t.Errorf("the example has %d lines, at most 10 wanted", n)
	}
	here, _ := filepath.Abs(".")
	dir := t.TempDir()
	program := "package main\n\nimport (\n\t\"boxlite\"\n\t\"context\"\n\t\"fmt\"\n\t\"log\"\n\t\"os\"\n)\n\nfunc main() {\n" + example + "}\n"
	files := map[string]string{
		"main.go": program,
		"go.mod":  "module readme\n\ngo 1.22\n\nrequire boxlite v0.0.0\n\nreplace boxlite => " + here + "\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	home := newHome(t)
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "run", ".")
	cmd.Dir = dir
	engine := os.Getenv("BOXLITE_TEST_ENGINE")
	if engine == "" {
		engine = "qemu"
	}
	cmd.Env = append(os.Environ(), "BOXLITE_HOME="+home, "BOXLITE_ENGINE="+engine, "BOXLITE_TEST_ROOTFS="+testRootfs(t))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if string(out) != "hello from a box\n<nil>\n" {
		t.Errorf("printed %q", out)
	}
	// AutoRemove: the box is gone from the home.
	if entries, _ := os.ReadDir(filepath.Join(home, "boxes")); len(entries) != 0 {
		t.Errorf("boxes left in the home: %v", entries)
	}
}

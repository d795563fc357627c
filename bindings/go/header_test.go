package boxlite

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// notWrapped are the header's entry points this package does not call (the README's
// "Not (yet) wrapped"). cgo already checks every call it makes against include/boxlite.h at
// compile time (names, argument types, constants); this test catches the other change: an
// entry point added to the header that the binding neither wraps nor lists here.
var notWrapped = map[string]bool{
	"boxlite_box_list_invalid_len": true, "boxlite_box_list_invalid_get": true,
	"boxlite_box_guest_stats": true, "boxlite_box_network_stats": true, "boxlite_runtime_metrics": true,
	"boxlite_command_set_tty": true, "boxlite_execution_resize": true, "boxlite_command_set_output_limit": true,
	"boxlite_box_run": true, "boxlite_output_stdout": true, "boxlite_output_stderr": true,
	"boxlite_output_status": true, "boxlite_output_truncated": true, "boxlite_output_free": true,
	"boxlite_runtime_pull_image": true, "boxlite_runtime_import_image": true,
	"boxlite_runtime_import_image_archive": true, "boxlite_runtime_remove_image": true,
	"boxlite_runtime_list_images": true, "boxlite_image_list_len": true, "boxlite_image_list_get": true,
	"boxlite_image_list_free": true, "boxlite_runtime_options_set_registry_credentials": true,
	"boxlite_log_set_callback": true,
	"boxlite_execution_wait":   true, // deliberately: Wait waits in bounded slices (boxlite_execution_wait_timeout)
	// deliberately: the callbacks write to the Cmd's io.Writers, whose blocking holds the process back
	"boxlite_execution_pause_output": true, "boxlite_execution_resume_output": true,
}

func TestEveryHeaderEntryPointIsWrappedOrListed(t *testing.T) {
	header, err := os.ReadFile(filepath.Join(repo, "include/boxlite.h"))
	if err != nil {
		t.Fatal(err)
	}
	var goSource, cSource strings.Builder // (helpers.c only calls; its declarations are in helpers.h)
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") {
			b, _ := os.ReadFile(f)
			goSource.Write(b)
		}
	}
	b, _ := os.ReadFile("helpers.c")
	cSource.Write(b)
	var missing, stale []string
	seen := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^[a-z].*?\b(boxlite_[a-z0-9_]+)\(`).FindAllStringSubmatch(string(header), -1) {
		name := m[1]
		seen[name] = true
		calls := strings.Contains(goSource.String(), "C."+name+"(") || strings.Contains(cSource.String(), " "+name+"(")
		if !calls && !notWrapped[name] {
			missing = append(missing, name)
		}
		if calls && notWrapped[name] {
			stale = append(stale, name)
		}
	}
	for name, listed := range notWrapped {
		if listed && !seen[name] {
			stale = append(stale, name+" (not in the header)")
		}
	}
	sort.Strings(missing)
	sort.Strings(stale)
	if len(seen) < 90 {
		t.Errorf("only %d entry points found in the header: the pattern is wrong", len(seen))
	}
	if len(missing) > 0 {
		t.Errorf("entry points neither wrapped nor listed as not wrapped: %v", missing)
	}
	if len(stale) > 0 {
		t.Errorf("listed as not wrapped but called (or gone): %v", stale)
	}
}

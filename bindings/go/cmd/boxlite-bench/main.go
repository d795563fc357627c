// Command boxlite-bench is the Go part of the binding overhead benchmark
// (scripts/bench-bindings.sh): the same as bindings/bench/exec_c.c through this module.
// It prints one JSON line.
//
// Usage: boxlite-bench HOME ROOTFS [N]
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"time"

	"boxlite"
)

const streamBytes = 64 * 1024 * 1024

// counter counts what is written to it (Cmd.Stdout: called on the library's threads, one
// chunk at a time for one execution).
type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// percentile is the nearest rank (the same rule as exec_c.c).
func percentile(sorted []float64, p float64) float64 {
	rank := int(math.Ceil(p/100*float64(len(sorted)) - 1e-6))
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

func round(x float64, digits int) float64 {
	scale := math.Pow(10, float64(digits))
	return math.Round(x*scale) / scale
}

func run() error {
	if len(os.Args) < 3 {
		return fmt.Errorf("usage: boxlite-bench HOME ROOTFS [N]")
	}
	n := 100
	if len(os.Args) > 3 {
		v, err := strconv.Atoi(os.Args[3])
		if err != nil {
			return err
		}
		n = max(v, 1)
	}
	ctx := context.Background()
	rt, err := boxlite.NewRuntime(&boxlite.RuntimeOptions{Home: os.Args[1], Engine: boxlite.EngineQEMU})
	if err != nil {
		return err
	}
	defer rt.Close()
	box, err := rt.CreateBox(ctx, &boxlite.BoxOptions{RootDisk: os.Args[2], RootDiskReadOnly: true, AutoRemove: true})
	if err != nil {
		return err
	}
	defer box.Close()
	for i := 0; i < 5; i++ { // warm up: boots the box
		if err := box.Command("true").Run(ctx); err != nil {
			return err
		}
	}
	samples := make([]float64, 0, n)
	for i := 0; i < n; i++ {
		t0 := time.Now()
		err := box.Command("true").Run(ctx)
		samples = append(samples, float64(time.Since(t0).Nanoseconds())/1e6)
		if err != nil {
			return fmt.Errorf("true: %w", err)
		}
	}
	sort.Float64s(samples)
	var streamed counter
	cmd := box.Command("head", "-c", strconv.Itoa(streamBytes), "/dev/zero")
	cmd.Stdout = &streamed
	t0 := time.Now()
	err = cmd.Run(ctx)
	streamS := time.Since(t0).Seconds()
	if err != nil || streamed.n != streamBytes {
		return fmt.Errorf("stream: %v with %d bytes", err, streamed.n)
	}
	if err := box.Stop(ctx); err != nil {
		return err
	}
	line, err := json.Marshal(struct {
		Lang      string  `json:"lang"`
		N         int     `json:"n"`
		TrueP50   float64 `json:"true_p50_ms"`
		TrueP99   float64 `json:"true_p99_ms"`
		StreamMBs float64 `json:"stream_mb_s"`
	}{"go", n, round(percentile(samples, 50), 3), round(percentile(samples, 99), 3),
		round(float64(streamed.n)/1e6/streamS, 2)})
	if err != nil {
		return err
	}
	fmt.Println(string(line))
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "boxlite-bench: %v\n", err)
		os.Exit(1)
	}
}

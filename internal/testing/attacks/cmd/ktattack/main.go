// Command ktattack plays the attack catalogue A1-A12 and A14 (package
// internal/testing/attacks) against real clients and auditors on loopback and
// prints who detected each attack, how fast and with what evidence.
//
//	go run ./internal/testing/attacks/cmd/ktattack [--json] [--run A1,A4] [--notes]
//
// Exit status: 0 when every scenario's control succeeded and its attack was
// detected by the party that must catch it; 1 when a scenario failed; 2 on
// bad arguments. It is a test-support tool: it takes flags only, no
// configuration, and is never part of a production binary.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/klog/v2"

	"github.com/keytrans/kt/internal/testing/attacks"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type jsonDetection struct {
	attacks.Detection
	AfterMS float64 `json:"time_to_detection_ms"`
}

type jsonResult struct {
	*attacks.Result
	Detections []jsonDetection `json:"detections"`
	TookMS     float64         `json:"took_ms"`
	Error      string          `json:"error,omitempty"`
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ktattack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	only := fs.String("run", "", "comma-separated attack IDs to play (default: all)")
	notes := fs.Bool("notes", false, "also print each scenario's control and notes")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "ktattack: unexpected arguments %q\n", fs.Args())
		return 2
	}
	var scen []attacks.Scenario
	want := map[string]bool{}
	for _, id := range strings.Split(*only, ",") {
		if id = strings.ToUpper(strings.TrimSpace(id)); id != "" {
			want[id] = true
		}
	}
	all := len(want) == 0
	for _, s := range attacks.Scenarios() {
		if all || want[s.ID] {
			scen = append(scen, s)
			delete(want, s.ID)
		}
	}
	if len(want) != 0 {
		fmt.Fprintf(stderr, "ktattack: unknown attack IDs %v (A1 to A10, A11, A11M, A11C, A12, A14)\n", keys(want))
		return 2
	}
	// Tessera logs through klog; keep the report readable.
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var out []jsonResult
	failed := 0
	start := time.Now()
	for _, s := range scen {
		r, err := attacks.Run(ctx, s)
		jr := jsonResult{Result: r}
		if r == nil {
			jr.Result = &attacks.Result{ID: s.ID, Attack: s.Attack, Capability: s.Capability}
		}
		for _, d := range jr.Result.Detections {
			jr.Detections = append(jr.Detections, jsonDetection{d, float64(d.After.Microseconds()) / 1000})
		}
		jr.TookMS = float64(jr.Result.Took.Milliseconds())
		if err != nil {
			jr.Error = err.Error()
			failed++
		}
		out = append(out, jr)
	}
	if *asJSON {
		e := json.NewEncoder(stdout)
		e.SetIndent("", "  ")
		if err := e.Encode(out); err != nil {
			fmt.Fprintln(stderr, "ktattack:", err)
			return 1
		}
	} else {
		printTable(stdout, out, *notes)
		fmt.Fprintf(stdout, "\n%d scenarios in %v; %d failed\n", len(out), time.Since(start).Round(100*time.Millisecond), failed)
	}
	if failed > 0 {
		return 1
	}
	return 0
}

func printTable(w io.Writer, rs []jsonResult, notes bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ATTACK\tDETECTED BY\tTIME TO DETECTION\tEVIDENCE")
	for _, r := range rs {
		name := r.ID + " " + r.Attack
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\tFAILED\t-\t%s\n", name, r.Error)
		}
		for i, d := range r.Detections {
			if i > 0 {
				name = ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, d.By, when(d.Detection), d.Evidence)
		}
	}
	tw.Flush()
	if !notes {
		return
	}
	for _, r := range rs {
		fmt.Fprintf(w, "\n%s %s\n  adversary: %s\n  control:   %s\n", r.ID, r.Attack, r.Capability, r.Control)
		for _, n := range r.Notes {
			fmt.Fprintf(w, "  note:      %s\n", n)
		}
	}
}

func when(d attacks.Detection) string {
	var t string
	switch a := d.After; {
	case a == 0:
		return fmt.Sprintf("not timed, %d requests", d.Polls)
	case a < time.Millisecond:
		t = fmt.Sprintf("%d µs", a.Microseconds())
	case a < time.Second:
		t = fmt.Sprintf("%.1f ms", float64(a.Microseconds())/1000)
	default:
		t = fmt.Sprintf("%.2f s", a.Seconds())
	}
	if d.Clock != "wall" {
		t += " on the " + d.Clock
	}
	switch {
	case d.Polls == 1:
		t += ", first attempt"
	case d.Polls > 1:
		t += fmt.Sprintf(", attempt %d", d.Polls)
	}
	return t
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

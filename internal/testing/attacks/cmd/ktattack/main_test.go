package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestBadArguments(t *testing.T) {
	for _, args := range [][]string{
		{"--no-such-flag"},
		{"--run", "A99"},
		{"--run", "A1,bogus"},
		{"extra"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
		if errb.Len() == 0 {
			t.Errorf("%q: no message on stderr", args)
		}
	}
}

// TestReportJSON plays one scenario and checks the JSON report names the
// detector and carries the evidence.
func TestReportJSON(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--run", "a1", "--json"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rs []struct {
		ID         string
		Control    string
		Detections []struct {
			By       string  `json:"detected_by"`
			AfterMS  float64 `json:"time_to_detection_ms"`
			Evidence string
			Error    string
		}
	}
	if err := json.Unmarshal(out.Bytes(), &rs); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.String())
	}
	if len(rs) != 1 || rs[0].ID != "A1" || rs[0].Control == "" || len(rs[0].Detections) != 2 {
		t.Fatalf("report: %+v", rs)
	}
	for _, d := range rs[0].Detections {
		if d.By != "sender client" || d.AfterMS <= 0 || !strings.Contains(d.Error, "does not") || d.Evidence == "" {
			t.Errorf("detection %+v", d)
		}
	}
}

func TestReportTable(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--run", "A7", "--notes"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"ATTACK", "DETECTED BY", "A7 ghost device added and removed", "owner monitor", "transient device", "control:", "1 scenarios"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

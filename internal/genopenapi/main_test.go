package main

import (
	"encoding/json"
	"os"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/keytrans/kt/api/ktpb"
)

// TestCommittedDocumentCovers checks api/openapi against the compiled
// protobuf package, without protoc: every Directory method has a path and
// every field of its messages a property, so a changed .proto whose
// document was not regenerated fails here as well as in CI's diff.
func TestCommittedDocumentCovers(t *testing.T) {
	b, err := os.ReadFile("../../api/openapi/kt.v1.directory.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths      map[string]map[string]any
		Components struct {
			Schemas map[string]struct {
				Properties map[string]any
			}
		}
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	sd := ktpb.File_kt_v1_kt_proto.Services().ByName("Directory")
	var check func(md protoreflect.MessageDescriptor)
	check = func(md protoreflect.MessageDescriptor) {
		s, ok := doc.Components.Schemas[string(md.FullName())]
		if !ok {
			t.Errorf("no schema for %s", md.FullName())
			return
		}
		if len(s.Properties) != md.Fields().Len() {
			t.Errorf("%s: %d properties, %d fields", md.FullName(), len(s.Properties), md.Fields().Len())
		}
		for i := range md.Fields().Len() {
			fd := md.Fields().Get(i)
			if _, ok := s.Properties[fd.JSONName()]; !ok {
				t.Errorf("%s: no property %s", md.FullName(), fd.JSONName())
			}
			if fd.Message() != nil {
				check(fd.Message())
			}
		}
	}
	if len(doc.Paths) != sd.Methods().Len() {
		t.Errorf("%d paths, %d methods", len(doc.Paths), sd.Methods().Len())
	}
	for i := range sd.Methods().Len() {
		m := sd.Methods().Get(i)
		if _, ok := doc.Paths["/kt.v1.Directory/"+string(m.Name())]["post"]; !ok {
			t.Errorf("no POST path for %s", m.Name())
		}
		check(m.Input())
		check(m.Output())
	}
}

// TestDocumentDeterministic: the generator's output does not depend on map
// order, so CI's diff is meaningful.
func TestDocumentDeterministic(t *testing.T) {
	sd := ktpb.File_kt_v1_kt_proto.Services().ByName("Directory")
	a, err := Document(sd)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		b, _ := Document(sd)
		if string(a) != string(b) {
			t.Fatal("two runs differ")
		}
	}
}

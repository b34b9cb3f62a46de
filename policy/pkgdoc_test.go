package policy

import (
	"go/parser"
	"go/token"
	"strings"
	"testing"
)

// TestPackageDoc checks that the package opens with a doc that says what it
// is, in doc.go.
func TestPackageDoc(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "doc.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	if f.Doc == nil || !strings.HasPrefix(f.Doc.Text(), "Package policy ") || len(f.Doc.Text()) < 500 {
		t.Error("package doc missing or short")
	}
}

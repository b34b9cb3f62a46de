package dns

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestPackageDocs checks that this package and its test twin open with a
// package doc that says what they are.
func TestPackageDocs(t *testing.T) {
	for _, dir := range []string{".", "dnstest"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		var name, doc string
		for _, path := range files {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			name = f.Name.Name
			if f.Doc != nil {
				doc += f.Doc.Text()
			}
		}
		if !strings.HasPrefix(doc, "Package "+name+" ") || len(doc) < 200 {
			t.Errorf("%s: package %s needs a doc comment saying what it is, how to use it and why", dir, name)
		}
	}
}

package tun

import (
	"go/parser"
	"go/token"
	"strings"
	"testing"
)

// TestPackageDocs checks that tun and tuntest open with a package doc
// (STYLE.md habit 16).
func TestPackageDocs(t *testing.T) {
	for _, dir := range []string{".", "tuntest"} {
		pkgs, err := parser.ParseDir(token.NewFileSet(), dir, nil, parser.ParseComments|parser.PackageClauseOnly)
		if err != nil {
			t.Fatal(err)
		}
		for name, p := range pkgs {
			if strings.HasSuffix(name, "_test") {
				continue
			}
			var doc string
			for _, f := range p.Files {
				if f.Doc != nil {
					doc += f.Doc.Text()
				}
			}
			if !strings.HasPrefix(doc, "Package "+name+" ") || len(doc) < 200 {
				t.Errorf("package %s (%s): missing or short package doc", name, dir)
			}
		}
	}
}

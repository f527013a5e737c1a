"""Document fixtures the context tests write themselves: PDF (fpdf2), DOCX (python-docx), HTML."""

from __future__ import annotations

from pathlib import Path


def write_pdf(path: Path, pages: list[str]) -> Path:
    """A real PDF with one text line per page."""
    from fpdf import FPDF

    pdf = FPDF()
    for text in pages:
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(w=0, text=text)
    pdf.output(str(path))
    return path


def write_docx(path: Path) -> Path:
    """A DOCX with a title, two headings, a paragraph, a bullet and a table."""
    import docx

    document = docx.Document()
    document.add_heading("Quarterly report", 0)
    document.add_heading("Revenue", 1)
    document.add_paragraph("Revenue grew by 12 percent in the quarter.")
    document.add_paragraph("Widgets sold well", style="List Bullet")
    document.add_heading("Regions", 2)
    table = document.add_table(rows=2, cols=2)
    for row, cells in enumerate((("Region", "Sales"), ("North", "4200"))):
        for column, text in enumerate(cells):
            table.cell(row, column).text = text
    document.save(str(path))
    return path


HTML = """<!doctype html><html><head><title>Field guide</title>
<style>body { color: red }</style><script>var hidden = "SCRIPT-TEXT";</script></head>
<body><h1>Birds</h1><p>The <b>heron</b> waits.</p>
<h2>Habitat</h2><ul><li>rivers</li><li>lakes</li></ul>
<table><tr><th>Bird</th><th>Length</th></tr><tr><td>Heron</td><td>95 cm</td></tr></table>
</body></html>
"""


def write_html(path: Path) -> Path:
    path.write_text(HTML, encoding="utf-8")
    return path

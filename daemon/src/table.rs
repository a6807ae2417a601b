//! Plain-text tables for the CLI: columns as wide as their widest cell.

/// Renders `rows` (the first one is the header) with two spaces between
/// columns; the last column is not padded. Widths count characters.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let last = row.len().saturating_sub(1);
        for (c, cell) in row.iter().enumerate() {
            if c == last {
                out.push_str(cell);
            } else {
                let pad = widths[c] - cell.chars().count();
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_widest_cell() {
        let rows = vec![
            vec!["NAME".to_string(), "WHERE".to_string(), "WHY".to_string()],
            vec![
                "web".to_string(),
                "kcp-east (2), kcp-west (2)".to_string(),
                "spread".to_string(),
            ],
        ];
        assert_eq!(
            render(&rows),
            "NAME  WHERE                       WHY\nweb   kcp-east (2), kcp-west (2)  spread\n"
        );
        assert_eq!(render(&[]), "");
    }
}

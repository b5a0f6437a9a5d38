import { describe, expect, it } from 'vitest';

import { barChart, escapeHtml, html } from '../../../dashboard/index.js';

describe('the dashboard’s html tag', () => {
  it('escapes every interpolated value (text and attributes), and only Html it built passes as markup', () => {
    const evil = `<img src=x onerror="alert(1)"> & 'quoted'`;
    const inner = html`<b>${evil}</b>`;
    // prettier-ignore
    const out = html`<td title="${evil}">${evil}</td>${inner}`.text;
    expect(out).toBe(
      '<td title="&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; &#39;quoted&#39;">&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; &#39;quoted&#39;</td>' +
        '<b>&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; &#39;quoted&#39;</b>',
    );
    expect(escapeHtml('a"b')).toBe('a&quot;b');
  });

  it('joins arrays and drops null, undefined and false; numbers are text', () => {
    expect(html`${['<a>', 1, null, undefined, false, html`<i></i>`]}`.text).toBe('&lt;a&gt;1<i></i>');
  });
});

describe('bar charts', () => {
  it('scale bars to the largest value (linear) and label them escaped', () => {
    const svg = barChart(
      [
        { label: '<org0>', value: 100 },
        { label: 'org1', value: 50 },
      ],
      { title: 'bytes', labelWidth: 100 },
    ).text;
    const widths = [...svg.matchAll(/<rect x="100" y="\d+" width="([\d.]+)"/g)].map((m) => Number(m[1]));
    expect(widths).toHaveLength(2);
    expect(widths[1]! / widths[0]!).toBeCloseTo(0.5, 6);
    expect(svg).toContain('&lt;org0&gt;');
    expect(svg).not.toContain('<org0>');
  });

  it('on a log axis, each decade is the same length; zero and non-finite values draw no bar', () => {
    const svg = barChart(
      [
        { label: 'a', value: 1e2 },
        { label: 'b', value: 1e4 },
        { label: 'c', value: 1e6 },
        { label: 'd', value: 0 },
        { label: 'e', value: Number.NaN },
      ],
      { title: 'condition', log: true, labelWidth: 100 },
    ).text;
    const widths = [...svg.matchAll(/<rect x="100" y="\d+" width="([\d.]+)"/g)].map((m) => Number(m[1]));
    expect(widths[2]! - widths[1]!).toBeCloseTo(widths[1]! - widths[0]!, 6);
    expect(widths[3]).toBe(0);
    expect(widths[4]).toBe(0);
  });
});

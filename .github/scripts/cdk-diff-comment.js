// Posts the cdk diff pages (cdk-diff/comment-N.md, written by scripts/cdk_diff.py) as PR comments,
// updated in place: page N replaces the comment that starts with `<!-- cdk-diff N -->`, new pages are
// added, and pages a shorter diff no longer needs are deleted. Called from actions/github-script.
const fs = require("fs");
const path = require("path");

const MARKER = /^<!-- cdk-diff (\d+) -->/;

function readPages(dir) {
  return fs
    .readdirSync(dir)
    .filter((name) => /^comment-\d+\.md$/.test(name))
    .sort((a, b) => parseInt(a.match(/\d+/)[0], 10) - parseInt(b.match(/\d+/)[0], 10))
    .map((name) => fs.readFileSync(path.join(dir, name), "utf8"));
}

module.exports = async function postDiffComments({ github, context, dir = "cdk-diff" }) {
  const pages = readPages(dir);
  const { owner, repo } = context.repo;
  const issue_number = context.issue.number;
  const comments = await github.paginate(github.rest.issues.listComments, {
    owner,
    repo,
    issue_number,
    per_page: 100,
  });
  const ours = new Map();
  for (const comment of comments) {
    const match = MARKER.exec(comment.body || "");
    if (match && comment.user && comment.user.type === "Bot") ours.set(parseInt(match[1], 10), comment);
  }
  for (const [index, body] of pages.entries()) {
    const existing = ours.get(index + 1);
    if (existing) {
      if (existing.body !== body) {
        await github.rest.issues.updateComment({ owner, repo, comment_id: existing.id, body });
      }
      ours.delete(index + 1);
    } else {
      await github.rest.issues.createComment({ owner, repo, issue_number, body });
    }
  }
  for (const stale of ours.values()) {
    await github.rest.issues.deleteComment({ owner, repo, comment_id: stale.id });
  }
  return pages.length;
};

// Progressive enhancement only: every action works without this file.
// Times are rendered in UTC by the server; show them in the reader's own time zone too.
document.addEventListener("DOMContentLoaded", () => {
  for (const element of document.querySelectorAll("time[datetime]")) {
    const moment = new Date(element.getAttribute("datetime"));
    if (!Number.isNaN(moment.getTime())) {
      element.title = moment.toLocaleString();
    }
  }
});
